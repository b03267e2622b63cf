"""AgentMesh agents service."""
