"""AgentMesh gateway: the only public entry point."""
