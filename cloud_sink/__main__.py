"""`python -m cloud_sink` runs the cloud_sink command line."""

from cloud_sink.cli import main

main()
