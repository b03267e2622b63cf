-- The managed Postgres, prepared once by its administrator (psql, as the database owner):
--   psql "$ADMIN_URL" -v identity_password=... -v agents_password=... -v chat_password=... \
--        -f deploy/k8s/postgres-roles.sql
-- One login role per service, owning that service's schema and nothing else. A service
-- and its migration Job connect as its role (the agentmesh-db-<service> Secrets), so one
-- service's credentials cannot read or change another's data.

CREATE ROLE agentmesh_identity LOGIN PASSWORD :'identity_password';
CREATE ROLE agentmesh_agents LOGIN PASSWORD :'agents_password';
CREATE ROLE agentmesh_chat LOGIN PASSWORD :'chat_password';

-- Only these roles connect. CREATE on the database because a migration starts with
-- CREATE SCHEMA IF NOT EXISTS, which Postgres checks before it finds the schema there;
-- it lets a role add schemas of its own, never touch another role's.
REVOKE ALL ON DATABASE agentmesh FROM PUBLIC;
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE agentmesh
  TO agentmesh_identity, agentmesh_agents, agentmesh_chat;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA IF NOT EXISTS identity AUTHORIZATION agentmesh_identity;
CREATE SCHEMA IF NOT EXISTS agents AUTHORIZATION agentmesh_agents;
CREATE SCHEMA IF NOT EXISTS chat AUTHORIZATION agentmesh_chat;

-- pgvector for the agents' knowledge bases. Creating an extension takes a privileged
-- role on managed services, so it is done here; the agents migration's
-- CREATE EXTENSION IF NOT EXISTS then finds it and does nothing.
CREATE EXTENSION IF NOT EXISTS vector;
