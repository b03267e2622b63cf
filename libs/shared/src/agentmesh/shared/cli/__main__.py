from agentmesh.shared.cli import main

main()
