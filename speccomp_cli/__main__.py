from speccomp_cli.main import entry

entry()
