from mlbuild._entry import main

main()
