from devtrail.cli import main

main()
