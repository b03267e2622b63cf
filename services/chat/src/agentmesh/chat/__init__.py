"""AgentMesh chat service."""
