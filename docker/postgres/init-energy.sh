#!/bin/bash
# Second database on the compose PostgreSQL: the power-trading desk, owned by its own role
# so the desk's services never hold the superuser's password (Airflow keeps its own DB).
# The postgres image runs this once, on an empty data directory, as POSTGRES_USER.
# ENERGY_DB_USER / ENERGY_DB_NAME exist for tests/integration/test_compose_postgres_init.py.
: "${ENERGY_DB_PASSWORD:?ENERGY_DB_PASSWORD is not set: run make compose-env}"
# psql's :'name' quotes the value as an SQL literal and :"name" as an identifier, so any
# password is safe here; a quoted heredoc keeps the shell out of it.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v energy_user="${ENERGY_DB_USER:-energy}" -v energy_db="${ENERGY_DB_NAME:-energy}" \
  -v energy_password="$ENERGY_DB_PASSWORD" <<'SQL'
CREATE ROLE :"energy_user" LOGIN PASSWORD :'energy_password';
CREATE DATABASE :"energy_db" OWNER :"energy_user";
SQL
