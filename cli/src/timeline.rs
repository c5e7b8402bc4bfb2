//! `orderflow timeline ORDER_ID`: an order's whole story from the event log, through the
//! gateway's GetOrderTimeline, one line per event, each with the time since the one before.

use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;

use crate::gateway::{GatewayClientArgs, refused};

#[derive(clap::Args)]
pub struct TimelineArgs {
    /// The order.
    order_id: String,
    /// Also show where each event is in the log, its event id and its trace id.
    #[arg(long)]
    details: bool,
    /// The gateway, and the token of the order's customer.
    #[command(flatten)]
    gateway: GatewayClientArgs,
}

pub async fn run(args: TimelineArgs) -> anyhow::Result<()> {
    let mut orders = OrderServiceClient::new(args.gateway.connect().await?);
    let timeline = orders
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: args.order_id.clone(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    print!("{}", orderflow_history::render(&timeline, args.details));
    Ok(())
}
