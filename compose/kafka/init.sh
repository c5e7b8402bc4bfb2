#!/usr/bin/env bash
# Runs once in the Kafka container's network namespace (compose service `kafka-init`), over
# the broker's loopback-only administration listener: creates the topics, one SCRAM user per
# component, and ACLs that give each exactly what the flow needs (seeds 002 and 003):
#
#   order      produces orders, order-status      consumes payments, inventory, catalogue, customers (group order)
#   payment    produces payments                  consumes orders, inventory     (group payment)
#   inventory  produces inventory, catalogue      consumes payments              (group inventory)
#   history                                       consumes every topic of orders' flow (group history)
#                                                 reads their dead-letter topics (group history-dead-letters)
#   analytics                                     consumes order-status, payments, inventory (group analytics)
#   notifications                                 consumes order-status          (group notifications)
#   gateway    produces customers (the directory) reads order-status             (no group)
#
# and each consumer writes its own dead-letter topics (<topic>.<service>.dlq). Nobody else
# may create, alter or delete topics. Safe to run again: every step is idempotent.
set -euo pipefail

BOOTSTRAP=127.0.0.1:29092
PARTITIONS="${ORDERFLOW_TOPIC_PARTITIONS:-6}"
bin=/opt/kafka/bin

topic() { # name [partitions]
  "$bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$1" --partitions "${2:-$PARTITIONS}" --replication-factor 1 >/dev/null
}

compacted_topic() { # name: keeps the newest record of each key (catalogue, customers)
  "$bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$1" --partitions "$PARTITIONS" --replication-factor 1 \
    --config cleanup.policy=compact >/dev/null
}

user() { # name, password
  [ -n "$2" ] || { echo "no password for Kafka user $1" >&2; exit 1; }
  "$bin/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter --entity-type users \
    --entity-name "$1" --add-config "SCRAM-SHA-512=[iterations=8192,password=$2]" >/dev/null
}

allow() { # principal, operations, resource flags...
  local principal="$1" operations="$2"; shift 2
  local flags=()
  for op in $operations; do flags+=(--operation "$op"); done
  "$bin/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --add --allow-principal "User:$principal" \
    "${flags[@]}" "$@" >/dev/null
}

produces() { allow "$1" "Write Describe" --topic "$2"; }
consumes() { # service, topic: reads it in its group and may dead-letter it
  allow "$1" "Read Describe" --topic "$2"
  allow "$1" "Write Describe" --topic "$2.$1.dlq"
  topic "$2.$1.dlq" 1 # dead letters are rare: one partition (DEAD_LETTER_PARTITIONS)
}

for t in orders order-status payments inventory; do topic "$t"; done
compacted_topic catalogue
compacted_topic customers

user order "$ORDERFLOW_KAFKA_ORDER_PASSWORD"
user payment "$ORDERFLOW_KAFKA_PAYMENT_PASSWORD"
user inventory "$ORDERFLOW_KAFKA_INVENTORY_PASSWORD"
user history "$ORDERFLOW_KAFKA_HISTORY_PASSWORD"
user analytics "$ORDERFLOW_KAFKA_ANALYTICS_PASSWORD"
user notifications "$ORDERFLOW_KAFKA_NOTIFICATIONS_PASSWORD"
user gateway "$ORDERFLOW_KAFKA_GATEWAY_PASSWORD"

produces order orders
produces order order-status
consumes order payments
consumes order inventory
consumes order catalogue
consumes order customers
allow order "Read Describe" --group order

produces payment payments
consumes payment orders
consumes payment inventory
allow payment "Read Describe" --group payment

produces inventory inventory
produces inventory catalogue
consumes inventory payments
allow inventory "Read Describe" --group inventory

# The history service publishes nothing: it reads every order's events, dead letters included
# (the catalogue belongs to no order).
consumes history orders
consumes history order-status
consumes history payments
consumes history inventory
allow history "Read Describe" --group history
allow history "Read Describe" --topic payments.order.dlq
allow history "Read Describe" --topic inventory.order.dlq
allow history "Read Describe" --topic orders.payment.dlq
allow history "Read Describe" --topic inventory.payment.dlq
allow history "Read Describe" --topic payments.inventory.dlq
allow history "Read Describe" --topic orders.history.dlq
allow history "Read Describe" --topic order-status.history.dlq
allow history "Read Describe" --topic payments.history.dlq
allow history "Read Describe" --topic inventory.history.dlq
allow history "Read Describe" --topic order-status.analytics.dlq
allow history "Read Describe" --topic payments.analytics.dlq
allow history "Read Describe" --topic inventory.analytics.dlq
allow history "Read Describe" --topic order-status.notifications.dlq
allow history "Read Describe" --group history-dead-letters

# The analytics service publishes nothing either.
consumes analytics order-status
consumes analytics payments
consumes analytics inventory
allow analytics "Read Describe" --group analytics

# The notifications service publishes only its dead letters: notifications it could not
# deliver within its budget (consumes grants that).
consumes notifications order-status
allow notifications "Read Describe" --group notifications

allow gateway "Read Describe" --topic order-status
# Operators' SetCustomerStatus publishes the customer directory.
produces gateway customers

echo "Kafka topics, users and ACLs are in place"
