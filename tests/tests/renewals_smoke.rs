//! Keeps the renewals benchmark honest: run small, every renewal must land exactly once
//! in the ledger and the balance must move by exactly that much. No timing is asserted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_renews_exactly_what_it_counts() {
    let run = outpost_tests::renewals::http_renewals(8, 5).await.unwrap();
    assert_eq!(run.renewals, 40);
    assert_eq!(run.ledger_rows, 40);
    assert_eq!(
        run.balance,
        outpost_tests::renewals::START - 40 * outpost_tests::renewals::PRICE
    );
    let raw = outpost_tests::renewals::raw_sqlite(50).unwrap();
    assert_eq!(raw.transactions, 50);
    let direct = outpost_tests::renewals::direct_renewals(20).unwrap();
    assert_eq!(direct.transactions, 20);
}
