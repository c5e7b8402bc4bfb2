-- An order's pending notifications by version: the deliverer's per-candidate question
-- ("does this order have an earlier status still pending?", in `store::CLAIM` and
-- `store::BACKLOG`) answered from the order's own entries. Without it the planner, whenever
-- the table's statistics are missing or stale (autovacuum off or behind), combined the
-- primary key with a scan of the whole `notifications_due` index for every candidate: with
-- 150,000 notifications pending a claim of 32 took 224 ms instead of 0.6 ms, the backlog read
-- took minutes, and delivery stopped while the backlog grew (docs/performance.md section 19).
CREATE INDEX notifications_pending_by_order ON notifications (order_id, version)
    WHERE state = 'pending';
