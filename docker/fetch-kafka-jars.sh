#!/bin/sh
# Puts Spark's JVM Kafka connector and its runtime dependencies into pyspark's jars
# directory, so `format("kafka")` works without --packages (no Ivy download at submit time).
# Versions: jvm/spark-kafka.lock (tests/unit/test_compose.py checks the Dockerfiles against it).
set -eu
: "${SPARK_VERSION:?}" "${SCALA_BINARY:?}" "${KAFKA_CLIENTS_VERSION:?}" "${COMMONS_POOL2_VERSION:?}"
MAVEN="${MAVEN_REPOSITORY:-https://repo1.maven.org/maven2}"
JARS="$(python -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
fetch() {
  echo "fetching $2"
  curl -fsSL --retry 3 -o "$JARS/$2" "$MAVEN/$1/$2"
}
fetch "org/apache/spark/spark-sql-kafka-0-10_${SCALA_BINARY}/${SPARK_VERSION}" "spark-sql-kafka-0-10_${SCALA_BINARY}-${SPARK_VERSION}.jar"
fetch "org/apache/spark/spark-token-provider-kafka-0-10_${SCALA_BINARY}/${SPARK_VERSION}" "spark-token-provider-kafka-0-10_${SCALA_BINARY}-${SPARK_VERSION}.jar"
fetch "org/apache/kafka/kafka-clients/${KAFKA_CLIENTS_VERSION}" "kafka-clients-${KAFKA_CLIENTS_VERSION}.jar"
fetch "org/apache/commons/commons-pool2/${COMMONS_POOL2_VERSION}" "commons-pool2-${COMMONS_POOL2_VERSION}.jar"
