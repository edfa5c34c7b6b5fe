"""A stand-in of the DigitalOcean API for droplets mode, on loopback, whose droplets are lab
hosts on this machine (see docs/developers/standin.md)."""
