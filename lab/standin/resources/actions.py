"""Actions: what the API answers for work it does after answering (a droplet's creation and
power, a volume's attachment); "in-progress", then "completed" or "errored"."""

from __future__ import annotations

from .base import Request, Resource, at, now_iso
from .catalog import region_json


class Actions(Resource):
    COLLECTION = "actions"
    KIND = "action"

    def routes(self):
        return at("/v2/actions/{action}", GET=self.get)

    def start(self, kind: str, resource_type: str, resource_id, region: str) -> dict:
        action = {
            "id": 2900000000 + self.account.next_id("action"),
            "status": "in-progress",
            "type": kind,
            "started_at": now_iso(),
            "completed_at": None,
            "resource_id": resource_id,
            "resource_type": resource_type,
            "region": region_json(region) if region else None,
            "region_slug": region,
        }
        self.items[str(action["id"])] = action
        return action

    def finish(self, action_id: int, errored: bool = False) -> None:
        action = self.items[str(action_id)]
        action["status"] = "errored" if errored else "completed"
        action["completed_at"] = now_iso()

    @staticmethod
    def href(action: dict) -> str:
        return f"/v2/actions/{action['id']}"

    def of(self, resource_type: str, resource_id) -> list[dict]:
        return [
            a
            for a in self.items.values()
            if a["resource_type"] == resource_type and a["resource_id"] == resource_id
        ]

    def get(self, request: Request):
        return {"action": self.find(request.params["action"])}

    def recover(self) -> None:
        """Work cut short by a restart ended in error."""
        with self.account.lock:
            for action in self.items.values():
                if action["status"] == "in-progress":
                    action["status"] = "errored"
                    action["completed_at"] = now_iso()
            self.save()
