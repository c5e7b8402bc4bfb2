//! `orderflow stats`: figures over every order from the analytics service, through the
//! gateway's GetStats (an operator's token).

use orderflow_proto::v1 as pb;
use orderflow_proto::v1::stats_service_client::StatsServiceClient;

use crate::gateway::{GatewayClientArgs, refused};

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Minutes of revenue to show, the newest first (1 to 1440).
    #[arg(long, default_value_t = 10)]
    minutes: i32,
    /// The gateway, and an operator's token (`orderflow token --customer ops --operator`).
    #[command(flatten)]
    gateway: GatewayClientArgs,
}

pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let mut stats = StatsServiceClient::new(args.gateway.connect().await?);
    let figures = stats
        .get_stats(pb::GetStatsRequest {
            revenue_minutes: args.minutes,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print!("{}", orderflow_analytics::render(&figures));
    Ok(())
}
