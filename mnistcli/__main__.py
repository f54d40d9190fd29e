"""Allow `python -m mnistcli`."""

from mnistcli.cli import main

main()
