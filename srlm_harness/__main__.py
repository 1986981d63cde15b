from srlm_harness.cli.app import main

main()
