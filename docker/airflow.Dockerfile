# Airflow (api-server, scheduler, dag-processor, triggerer) with the project installed:
# the DAGs import marketstream, and the scheduler's tasks run spark-submit in client mode
# (the driver runs here), hence Java 17, pyspark and the JVM Kafka connector.
FROM apache/airflow:3.3.2-python3.11

# Spark's Kafka connector and its dependencies as pinned in jvm/spark-kafka.lock (Maven
# Central serves no 4.3 connector; the 4.2 one runs on PySpark 4.3, tested).
ARG SPARK_KAFKA_CONNECTOR_VERSION=4.2.0
ARG SCALA_BINARY=2.13
ARG KAFKA_CLIENTS_VERSION=3.9.2
ARG COMMONS_POOL2_VERSION=2.13.1
ARG TARGETARCH=amd64

USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless curl procps \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-${TARGETARCH}

COPY --chown=airflow:0 pyproject.toml constraints.txt README.md sitecustomize.py /opt/marketstream/
COPY --chown=airflow:0 marketstream /opt/marketstream/marketstream
COPY --chown=airflow:0 producer /opt/marketstream/producer
COPY --chown=airflow:0 dashboard /opt/marketstream/dashboard
COPY --chown=airflow:0 spark_apps /opt/marketstream/spark_apps
COPY --chown=airflow:0 dags /opt/marketstream/dags
COPY docker/fetch-kafka-jars.sh /usr/local/bin/fetch-kafka-jars.sh
# The containers run as AIRFLOW_UID:0 (your uid, group 0: the image's arbitrary-uid
# convention), so what they write must be group-writable: var/ holds the validation replay
# cache and the market-data rate-limit file (container-local). The volumes mounted on
# checkpoints, exports and auth start from this ownership; airflow-init (root) then hands
# them to AIRFLOW_UID:0.
RUN mkdir -p /opt/marketstream/var/checkpoints /opt/marketstream/exports /opt/airflow/auth \
 && chown -R airflow:0 /opt/marketstream /opt/airflow/auth \
 && chmod -R g+rwX /opt/marketstream/var /opt/marketstream/exports /opt/airflow/auth

USER airflow
WORKDIR /opt/marketstream
# Same pins as the embedded install (constraints.txt includes apache-airflow==3.3.2).
RUN pip install --no-cache-dir -c constraints.txt -e . \
 && pip install --no-cache-dir --force-reinstall --no-deps "$(grep '^pyspark==' constraints.txt)" \
 && SPARK_VERSION=$SPARK_KAFKA_CONNECTOR_VERSION SCALA_BINARY=$SCALA_BINARY KAFKA_CLIENTS_VERSION=$KAFKA_CLIENTS_VERSION \
    COMMONS_POOL2_VERSION=$COMMONS_POOL2_VERSION fetch-kafka-jars.sh

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/marketstream/dags \
    PYSPARK_PYTHON=python \
    PYTHONPATH=/opt/marketstream
