from speccomp.cli import entry

entry()
