#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is new: one role per service (not a superuser, no
# CREATEDB/CREATEROLE) owning that service's database, and no CONNECT for PUBLIC, so a service
# can reach only its own tables. Passwords come from the environment (see docker-compose.yml).
set -euo pipefail
for service in registry order payment inventory history analytics notifications; do
  var="ORDERFLOW_${service^^}_DB_PASSWORD"
  password="${!var:?$var is not set}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="orderflow_$service" -v db="orderflow_$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
