# Spark master/worker and every non-Airflow project service (emulators, listener, loader,
# dashboard, one-shot init): Python 3.11 + Java 17 + the project (editable, so
# PROJECT_ROOT is /opt/marketstream) + the JVM Kafka connector baked into Spark's jars.
FROM python:3.11-slim-bookworm

# Spark's Kafka connector and its dependencies as pinned in jvm/spark-kafka.lock (Maven
# Central serves no 4.3 connector; the 4.2 one runs on PySpark 4.3, tested).
ARG SPARK_KAFKA_CONNECTOR_VERSION=4.2.0
ARG SCALA_BINARY=2.13
ARG KAFKA_CLIENTS_VERSION=3.9.2
ARG COMMONS_POOL2_VERSION=2.13.1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless curl procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/marketstream
COPY pyproject.toml constraints.txt README.md sitecustomize.py ./
COPY marketstream ./marketstream
COPY producer ./producer
COPY dashboard ./dashboard
COPY spark_apps ./spark_apps
COPY dags ./dags
COPY tests/fixtures ./tests/fixtures
COPY docker/fetch-kafka-jars.sh /usr/local/bin/fetch-kafka-jars.sh

# The Spark provider drags pyspark-client in, which overwrites pyspark's files:
# reinstall pyspark last (same as the Makefile).
RUN pip install --no-cache-dir -c constraints.txt -e . \
 && pip install --no-cache-dir --force-reinstall --no-deps "$(grep '^pyspark==' constraints.txt)" \
 && SPARK_VERSION=$SPARK_KAFKA_CONNECTOR_VERSION SCALA_BINARY=$SCALA_BINARY KAFKA_CLIENTS_VERSION=$KAFKA_CLIENTS_VERSION \
    COMMONS_POOL2_VERSION=$COMMONS_POOL2_VERSION fetch-kafka-jars.sh

# PYTHONPATH: the project root's sitecustomize runs in the Python processes Spark starts
# (it puts the installed pyspark before Spark's zip of it; see sitecustomize.py).
ENV SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=python \
    PYTHONPATH=/opt/marketstream \
    PYTHONUNBUFFERED=1
ENV PATH="${SPARK_HOME}/bin:${SPARK_HOME}/sbin:${PATH}" \
    SPARK_WORKER_DIR=/opt/marketstream/var/spark-work

# The services run as this user, never root (docker-compose.yml runs them as
# MARKETSTREAM_UID:0, the uid Airflow's containers share): group 0 may write var/, where
# the checkpoints volume starts from this ownership; nobody else may read it.
ARG MARKETSTREAM_UID=50000
RUN useradd --non-unique --uid "$MARKETSTREAM_UID" --gid 0 --home-dir /opt/marketstream/var --no-create-home \
      --shell /usr/sbin/nologin marketstream \
 && mkdir -p /opt/marketstream/var/checkpoints /opt/marketstream/var/spark-work /opt/marketstream/exports \
 && chown -R marketstream:0 /opt/marketstream/var \
 && chmod -R g+rwX,o-rwx /opt/marketstream/var
USER marketstream

CMD ["python", "-m", "marketstream.embedded.stack"]
