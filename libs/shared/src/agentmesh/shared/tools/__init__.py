"""Built-in agent tools and the network address guard.

``netguard`` (SSRF guard, httpx only) is also used by MCP server registration, so this
package imports nothing eagerly: ``builtin`` needs langchain-core, ``netguard`` does not.
"""
