//! No index repeats another (PRF-03): every index is written on every insert and on every update
//! that is not HOT, so one that serves no query another index does not already serve is cost for
//! nothing. `trades_symbol_executed_idx (symbol, sequence DESC)` was one, beside the unique
//! `(symbol, sequence)`, until migration `20261204000002_drop_duplicate_trades_index.sql`.

use sqlx::PgPool;

use crate::helpers::spawn_app;

#[derive(sqlx::FromRow)]
struct Index {
    table_name: String,
    name: String,
    unique: bool,
    /// Key columns by number, in order.
    columns: Vec<i16>,
    predicate: Option<String>,
}

impl Index {
    /// Whether the searches this index serves, `other` serves as well: the same table, this
    /// index's columns leading `other`'s, the same rows (the same predicate). Directions are
    /// not compared: every query here compares the leading columns for equality, and then a
    /// btree read backwards gives the other order. (An index kept for an `ORDER BY` of mixed
    /// directions over several columns would be an exception, named here with its reason.) A
    /// unique index is also a constraint, so it is never the one that goes.
    fn is_served_by(&self, other: &Index) -> bool {
        let n = self.columns.len();
        self.table_name == other.table_name
            && self.name != other.name
            && !self.unique
            && self.predicate == other.predicate
            && other.columns.len() >= n
            && other.columns[..n] == self.columns[..]
    }
}

async fn btree_indexes(db: &PgPool) -> Vec<Index> {
    sqlx::query_as(
        "SELECT n.nspname || '.' || t.relname AS table_name, n.nspname || '.' || c.relname AS name,
                i.indisunique AS unique,
                (string_to_array(i.indkey::text, ' ')::int2[])[1:i.indnkeyatts] AS columns,
                pg_get_expr(i.indpred, i.indrelid) AS predicate
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_class t ON t.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           JOIN pg_am a ON a.oid = c.relam
          WHERE a.amname = 'btree' AND i.indexprs IS NULL
            AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn no_index_repeats_what_another_index_of_its_table_serves(pool: PgPool) {
    let app = spawn_app(pool).await;

    let indexes = btree_indexes(&app.db).await;

    assert!(
        indexes
            .iter()
            .any(|i| i.name == "orders.orders_resting_idx"),
        "every schema is migrated"
    );
    let repeated: Vec<String> = indexes
        .iter()
        .flat_map(|index| {
            indexes
                .iter()
                .filter(|other| index.is_served_by(other))
                .map(move |other| format!("{} is served by {}", index.name, other.name))
        })
        .collect();
    assert!(repeated.is_empty(), "{repeated:#?}");
}

#[test]
fn an_index_leading_another_over_the_same_rows_is_served_by_it() {
    let index = |name: &str, columns: &[i16], unique: bool| Index {
        table_name: "orders.trades".to_owned(),
        name: name.to_owned(),
        unique,
        columns: columns.to_vec(),
        predicate: None,
    };
    let by_sequence = index("unique", &[2, 5], true);
    // The index dropped on 2026-12-04, `(symbol, sequence DESC)`.
    assert!(index("descending", &[2, 5], false).is_served_by(&by_sequence));
    assert!(index("prefix", &[2], false).is_served_by(&by_sequence));
    assert!(!index("other", &[5], false).is_served_by(&by_sequence));
    assert!(
        !by_sequence.is_served_by(&index("longer", &[2, 5, 7], false)),
        "a unique index stays"
    );
    let mut partial = index("partial", &[2], false);
    partial.predicate = Some("(status = 'open'::text)".to_owned());
    assert!(!partial.is_served_by(&by_sequence), "it holds other rows");
}
