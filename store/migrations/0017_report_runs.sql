-- Which scheduled reports (alerts/reports.py) went to which notifier, per period: a
-- restart neither sends one twice nor forgets one it missed. One row per delivery.
CREATE TABLE IF NOT EXISTS report_runs
(
    report        LowCardinality(String),
    period_start  DateTime64(3, 'UTC'),
    period_end    DateTime64(3, 'UTC'),
    notifier      LowCardinality(String),
    late          UInt8,
    sent_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(sent_at)
ORDER BY (report, period_start, notifier)
TTL toDateTime(sent_at) + INTERVAL 400 DAY
