"""Lab and development tooling (not installed, not shipped): hosts made of network namespaces,
a stack of this project in a private working directory, `make lab`, the DigitalOcean API
stand-in (standin/, `make lab-droplets`), the benchmark, the docs'
invalid-configuration table, and the shell scripts that install the engine and the packages.
Run from the project directory (`python -m lab.<module>`); stdlib only at this level, so
`python3 -m lab.namespaces down` works without the venv."""
