"""AgentMesh service defaults: what every service wires in a handful of lines."""
