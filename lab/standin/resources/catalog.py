"""What the stand-in's account offers: regions, droplet sizes and images, as the API lists them,
and the account itself (GET /v2/account).

Slugs, memory, vCPUs and disk are DigitalOcean's; prices are indicative. A droplet is a lab host
running this machine's Debian 12 (`debian-12-x64`) or the Debian 13 image of lab/rootfs.py
(`debian-13-x64`): the other public images are known (a request names them correctly) but
refused with the reason.
"""

from __future__ import annotations

from .base import Request, Resource, at, not_found, page

REGIONS = {
    "nyc1": "New York 1",
    "nyc3": "New York 3",
    "sfo2": "San Francisco 2",
    "sfo3": "San Francisco 3",
    "ams3": "Amsterdam 3",
    "sgp1": "Singapore 1",
    "lon1": "London 1",
    "fra1": "Frankfurt 1",
    "tor1": "Toronto 1",
    "blr1": "Bangalore 1",
    "syd1": "Sydney 1",
    "atl1": "Atlanta 1",
}

# slug: (memory MiB, vCPUs, disk GB, transfer TB, price_monthly USD)
SIZES = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0),
    "s-8vcpu-16gb": (16384, 8, 320, 6.0, 96.0),
    "c-2": (4096, 2, 25, 4.0, 42.0),
    "c-4": (8192, 4, 50, 5.0, 84.0),
    "g-2vcpu-8gb": (8192, 2, 25, 4.0, 63.0),
    "m-2vcpu-16gb": (16384, 2, 50, 4.0, 84.0),
    "so1_5-2vcpu-16gb": (16384, 2, 450, 4.0, 131.0),
}

# slug: (id, distribution, name); only LAB_IMAGES make a lab host.
IMAGES = {
    "debian-12-x64": (150000012, "Debian", "12 x64"),
    "debian-13-x64": (150000013, "Debian", "13 x64"),
    "ubuntu-24-04-x64": (150000024, "Ubuntu", "24.04 (LTS) x64"),
    "ubuntu-22-04-x64": (150000022, "Ubuntu", "22.04 (LTS) x64"),
}
# slug -> the root file system of the lab host it makes (lab/rootfs.py's suite; None: the machine's)
LAB_IMAGES = {"debian-12-x64": None, "debian-13-x64": "trixie"}
DROPLET_LIMIT = 25  # the account's droplet quota, as a new DigitalOcean account has


def region_json(slug: str) -> dict:
    return {
        "slug": slug,
        "name": REGIONS[slug],
        "sizes": sorted(SIZES),
        "available": True,
        "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
    }


def size_json(slug: str) -> dict:
    memory, vcpus, disk, transfer, monthly = SIZES[slug]
    return {
        "slug": slug,
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "transfer": transfer,
        "price_monthly": monthly,
        "price_hourly": round(monthly / 672, 5),
        "regions": sorted(REGIONS),
        "available": True,
        "description": "Basic" if slug.startswith("s-") else "Premium",
    }


def image_json(slug: str) -> dict:
    image_id, distribution, name = IMAGES[slug]
    return {
        "id": image_id,
        "name": name,
        "distribution": distribution,
        "slug": slug,
        "public": True,
        "regions": sorted(REGIONS),
        "type": "base",
        "min_disk_size": 7,
        "size_gigabytes": 2.5,
        "status": "available",
    }


class Catalog(Resource):
    """The account and what it offers (no state: the catalog is fixed)."""

    def routes(self):
        return [
            *at("/v2/account", GET=self.get_account),
            *at("/v2/regions", GET=self.list_regions),
            *at("/v2/sizes", GET=self.list_sizes),
            *at("/v2/images/{image}", GET=self.get_image),
        ]

    def get_account(self, request: Request):
        return {
            "account": {
                "droplet_limit": DROPLET_LIMIT,
                "floating_ip_limit": 3,
                "volume_limit": 100,
                "email": "operator@standin.invalid",
                "uuid": "00000000-0000-4000-8000-000000000001",
                "email_verified": True,
                "status": "active",
                "status_message": "",
                "team": {"uuid": "00000000-0000-4000-8000-000000000002", "name": "lab"},
            }
        }

    def list_regions(self, request: Request):
        return page([region_json(s) for s in REGIONS], "regions", request.query)

    def list_sizes(self, request: Request):
        return page([size_json(s) for s in SIZES], "sizes", request.query)

    def get_image(self, request: Request):
        slug = request.params["image"]
        known = image_slug(slug)
        if known not in IMAGES:
            raise not_found(f"image {slug}")
        return {"image": image_json(known)}


def image_slug(text: str) -> str:
    """An image named by its slug or its id, as its slug (unknown: `text` itself)."""
    return next((s for s, (i, _, _) in IMAGES.items() if text in (s, str(i))), text)
