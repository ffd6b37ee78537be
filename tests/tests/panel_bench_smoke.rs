//! The panel benchmark, small: every case answers its page with the rows it should
//! (a search for one subscriber finds exactly it, one for nobody finds none, the
//! reseller sees only its own part of the tree). No timings are asserted.

use outpost_tests::panel_bench;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_answers_with_the_rows_it_should() {
    let seeded = tokio::task::spawn_blocking(|| panel_bench::seed(2_400))
        .await
        .unwrap()
        .unwrap();
    assert!(
        seeded.search_index_bytes().unwrap() > 0,
        "the search index is there"
    );
    let cases = panel_bench::run(&seeded, 2, 0).await.unwrap();
    assert_eq!(cases.len(), 18);
    // The portal's home page: the measured subscriber logs in through the form and sees
    // its own page (the run checks its username, a notice and the chart on every fetch).
    let p = panel_bench::portal(&seeded, 2, 0).await.unwrap();
    assert!(p.username.starts_with("sub"));
    for c in &cases {
        let want = match c.name.as_str() {
            "search: other reseller's" if c.who == "operator" => 1,
            "search: other reseller's" => 0,
            "search: one username" | "search: one phone" => 1,
            "search: no match" => 0,
            // 2,400 subscribers: every tenant has hundreds, so every list fills its page.
            "list" | "list, deep page" => 50,
            _ => usize::MAX,
        };
        if want != usize::MAX {
            assert_eq!(c.rows, want, "{} as {}: {}", c.name, c.who, c.path);
        } else {
            assert!(c.rows > 0, "{} as {}: {}", c.name, c.who, c.path);
        }
    }
}
