"""AgentMesh identity service."""
