from srlm_harness.cli import main

main()
