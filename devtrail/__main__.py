from devtrail.console import main

main()
