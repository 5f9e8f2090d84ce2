"""`python -m firmware_sims` runs the firmware_sims command line."""

from firmware_sims.cli import main

main()
