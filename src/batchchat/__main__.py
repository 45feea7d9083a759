from batchchat.cli import main

main()
