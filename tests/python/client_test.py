"""A client generated from proto/ with grpcio-tools places an order and watches it to the end.

Usage: client_test.py --gateway HOST:PORT --ca CA_PEM --sku SKU --token BEARER_TOKEN
Generates the Python stubs from proto/ into a temporary folder first, so it always tests
the repository's current API. Exits non-zero if the order does not end COMPLETED with
gap-free versions.
"""

import argparse
import importlib
import pathlib
import sys
import tempfile
import uuid

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def generate_stubs(out: pathlib.Path) -> None:
    proto_dir = ROOT / "proto"
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(proto_dir / "orderflow/v1/orderflow.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed to compile proto/orderflow/v1/orderflow.proto")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--ca", required=True, help="the CA certificate the gateway's certificate is signed by")
    parser.add_argument("--sku", required=True)
    parser.add_argument("--token", required=True, help="a bearer token; the order is placed as its subject")
    args = parser.parse_args()
    auth = (("authorization", f"Bearer {args.token}"),)

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        generate_stubs(out)
        sys.path.insert(0, str(out))
        import grpc  # noqa: PLC0415

        pb = importlib.import_module("orderflow.v1.orderflow_pb2")
        rpc = importlib.import_module("orderflow.v1.orderflow_pb2_grpc")

        credentials = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(args.ca).read_bytes())
        with grpc.secure_channel(args.gateway, credentials) as channel:
            orders = rpc.OrderServiceStub(channel)
            placed = orders.PlaceOrder(
                # No customer_id: the gateway takes the customer from the token.
                pb.PlaceOrderRequest(
                    items=[pb.OrderLine(sku=args.sku, quantity=2, unit_price=pb.Money(amount_minor=1250, currency="EUR"))],
                    payment_method="pm_card_visa",
                    idempotency_key=str(uuid.uuid4()),
                ),
                timeout=10,
                metadata=auth,
            )
            order = placed.order
            if order.customer_id != "python-client":
                print(f"placed as {order.customer_id!r}, not as the token's subject", file=sys.stderr)
                return 1
            print(f"placed {order.order_id} status={pb.OrderStatus.Name(order.status)} total={order.total.amount_minor} {order.total.currency}")
            versions = []
            last = None
            for update in orders.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=60, metadata=auth):
                last = pb.OrderStatus.Name(update.status).removeprefix("ORDER_STATUS_")
                versions.append(update.version)
                print(f"  v{update.version} {last}")
            if last != "COMPLETED":
                print(f"expected COMPLETED, stream ended at {last}", file=sys.stderr)
                return 1
            if versions != list(range(versions[0], versions[0] + len(versions))):
                print(f"versions are not gap-free: {versions}", file=sys.stderr)
                return 1
            fetched = orders.GetOrder(pb.GetOrderRequest(order_id=order.order_id), timeout=10, metadata=auth)
            print(f"GetOrder: {pb.OrderStatus.Name(fetched.status)} v{fetched.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
