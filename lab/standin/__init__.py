"""A stand-in of the DigitalOcean API for droplets mode, on loopback, whose droplets are lab
hosts on this machine (docs/developers/standin.md).

    account.py        the account: the resources composed, one state, routing, faults
    resources/        the API, one module per resource (resources/__init__.py lists them)
    backend.py        what the account asks of the machine: networks, hosts, disks
    hosts.py          that backend on this machine (LabHosts), layered on lab_network.py,
                      lab_machines.py (a lab host: plug, boot, power, destroy) and lab_disks.py
    firewall.py       cloud firewalls compiled to nftables
    server.py         HTTP on loopback, the request log, the control endpoints
    spaces.py         Spaces buckets over S3
    service.py        the server as a process of its own (`python -m lab.standin serve|down`)
    client.py         a small client (the API and the control endpoints)
    stack.py          a droplets stack on the stand-in; lab_droplets.py: `make lab-droplets`
"""
