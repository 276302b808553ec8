"""``python -m agents`` runs the ottscore command line."""

from agents.cli import main

main()
