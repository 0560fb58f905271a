from providers.simulator.server import main

main()
