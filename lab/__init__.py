"""Lab and development tooling (not installed, not shipped). Run from the project directory
(`python -m lab.<module>`); the tests may import it, it imports neither the tests nor the
operator's commands.

    system.py, host_files.py   what the labs do on this machine; a lab host's own files
    namespaces.py              hosts made of network namespaces (`python3 -m lab.namespaces`)
    main.py                    `make lab`
    stack.py                   a stack of this project in a private working directory
    standin/                   the DigitalOcean API stand-in (`make lab-droplets`)
    bench/, bench_backup.py    the benchmarks
    s3.py                      the lab's object store
    example_stacks.py          example stacks (the tests' and the invalid-configuration table's)
    bad_inputs_table.py        the invalid-configuration table
    *.sh                       the engine's and the packages' installers

system.py, host_files.py and namespaces.py are stdlib only, so `python3 -m lab.namespaces down`
works without the venv."""
