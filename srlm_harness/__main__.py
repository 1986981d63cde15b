from srlm_harness.cli.app import main

if __name__ == "__main__":
    main()
