from orchestrator.entry.cli.main import main

main()
