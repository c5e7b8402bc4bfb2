//! `orderflow timeline ORDER_ID`: an order's whole story from the event log, through the
//! gateway's GetOrderTimeline, one line per event, each with the time since the one before.

use std::path::PathBuf;

use orderflow_auth::Bearer;
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(clap::Args)]
pub struct TimelineArgs {
    /// The order.
    order_id: String,
    /// The gateway's URL.
    #[arg(
        long,
        env = "ORDERFLOW_GATEWAY_URL",
        default_value = "https://127.0.0.1:50051"
    )]
    gateway: String,
    /// The CA that signed the gateway's certificate (the system's trust store otherwise).
    #[arg(long, env = "ORDERFLOW_GATEWAY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The bearer token of the order's customer (e.g. `orderflow token --customer alice`).
    #[arg(long, env = "ORDERFLOW_TOKEN", hide_env_values = true)]
    token: String,
    /// Also show where each event is in the log, its event id and its trace id.
    #[arg(long)]
    details: bool,
}

pub async fn run(args: TimelineArgs) -> anyhow::Result<()> {
    let mut endpoint = Endpoint::from_shared(args.gateway.clone())?;
    if args.gateway.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("cannot read --ca-file {}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway at {}: {e}", args.gateway))?;
    let mut orders = OrderServiceClient::new(Bearer::new(&args.token).on(channel));
    let timeline = orders
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: args.order_id.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    print!("{}", orderflow_history::render(&timeline, args.details));
    Ok(())
}
