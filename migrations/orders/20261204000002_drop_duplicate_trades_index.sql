-- `trades_symbol_executed_idx` (symbol, sequence DESC) indexed exactly what the unique
-- constraint `trades_symbol_sequence_key` (symbol, sequence) already indexes: a B-tree is read
-- backwards as cheaply as forwards, so "the latest trades of a symbol" and the ticker's last
-- price use the constraint's index. Every trade paid for a second, identical index entry on the
-- order path (docs/performance.md, "Consumers that let entries gather"); the query-plan test
-- (`crates/tools/loadgen/tests/query_plans.rs`) proves the reads still use an index.
DROP INDEX IF EXISTS trades_symbol_executed_idx;
