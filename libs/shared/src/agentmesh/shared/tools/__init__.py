"""Built-in agent tools and the network address guard.

``netguard`` (SSRF guard and ``OutboundPolicy``; the clients that apply it are built by
``agentmesh.shared.outbound``) is also used outside the tools, so this package imports
nothing eagerly: ``builtin`` needs langchain-core, ``netguard`` does not.
"""
