-- Second database on the compose PostgreSQL: the power-trading desk (Airflow keeps its own).
CREATE DATABASE energy;
