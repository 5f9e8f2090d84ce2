"""`python -m edge_agent` runs the edge_agent command line."""

from edge_agent.cli import main

main()
