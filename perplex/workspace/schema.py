"""The database's schema as numbered migrations: each table, and the order it came in.

Migration N (1-based) is `MIGRATIONS[N - 1]`; `Store.open` applies those a file has not
seen. Append new ones; never edit a released one.
"""

from __future__ import annotations

import duckdb

MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE generations (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        source VARCHAR NOT NULL,
        model_label VARCHAR NOT NULL,
        params JSON,
        messages JSON NOT NULL,
        stop_reason VARCHAR NOT NULL,
        parent_id VARCHAR,
        branch_position INTEGER,
        title VARCHAR NOT NULL
    );
    CREATE TABLE token_steps (
        generation_id VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        token_id INTEGER,
        text VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        message_index INTEGER NOT NULL,
        prob DOUBLE,
        logprob DOUBLE,
        entropy DOUBLE,
        rank INTEGER,
        entropy_is_estimate BOOLEAN NOT NULL,
        forced BOOLEAN NOT NULL,
        top STRUCT(token_id INTEGER, text VARCHAR, prob DOUBLE, logprob DOUBLE)[] NOT NULL,
        PRIMARY KEY (generation_id, position)
    );
    """,
    "ALTER TABLE generations ADD COLUMN model_spec JSON;",
    # 3: sessions carry mode settings, a recency time and a deletion mark (kept so that a
    # tab still showing a deleted session gets a clear message); annotations; token sets.
    """
    ALTER TABLE sessions ADD COLUMN updated_at TIMESTAMPTZ;
    ALTER TABLE sessions ADD COLUMN settings JSON;
    ALTER TABLE sessions ADD COLUMN deleted_at TIMESTAMPTZ;
    UPDATE sessions SET updated_at = created_at;
    CREATE TABLE annotations (
        id VARCHAR PRIMARY KEY,
        generation_id VARCHAR NOT NULL,
        start_position INTEGER NOT NULL,
        end_position INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE token_sets (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE token_set_members (
        set_id VARCHAR NOT NULL,
        tokenizer VARCHAR NOT NULL,
        token_id INTEGER NOT NULL,
        token_text VARCHAR NOT NULL,
        word VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        added_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (set_id, tokenizer, token_id, word)
    );
    """,
    # 4: calibration datasets (items with their ground truth), runs and per-item results.
    """
    CREATE TABLE calibration_datasets (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE calibration_items (
        dataset_id VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        item_id VARCHAR NOT NULL,
        question VARCHAR NOT NULL,
        aliases JSON NOT NULL,
        choices JSON NOT NULL,
        answer_index INTEGER,
        PRIMARY KEY (dataset_id, item_id)
    );
    CREATE TABLE calibration_runs (
        id VARCHAR PRIMARY KEY,
        dataset_id VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        model_label VARCHAR NOT NULL,
        settings JSON NOT NULL
    );
    CREATE TABLE calibration_results (
        run_id VARCHAR NOT NULL,
        item_id VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        generation_id VARCHAR NOT NULL,
        answer VARCHAR NOT NULL,
        stated VARCHAR NOT NULL,
        stated_kind VARCHAR NOT NULL,
        confidences JSON NOT NULL,
        correct BOOLEAN NOT NULL,
        matched VARCHAR NOT NULL,
        override BOOLEAN,
        judged BOOLEAN,
        judge_p DOUBLE,
        PRIMARY KEY (run_id, item_id)
    );
    """,
    # 5: comparisons of two conditions, their answers' generations and per-token divergences
    """
    CREATE TABLE comparisons (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        prompt VARCHAR NOT NULL,
        conditions JSON NOT NULL,
        generations JSON NOT NULL,
        first_divergence INTEGER,
        notes JSON NOT NULL,
        batch_id VARCHAR
    );
    CREATE TABLE comparison_tokens (
        comparison_id VARCHAR NOT NULL,
        author VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        token_id INTEGER,
        text VARCHAR NOT NULL,
        logprob_a DOUBLE NOT NULL,
        logprob_b DOUBLE NOT NULL,
        kl_ab DOUBLE NOT NULL,
        kl_ba DOUBLE NOT NULL,
        js DOUBLE NOT NULL,
        rank_a INTEGER,
        rank_b INTEGER,
        bound BOOLEAN NOT NULL,
        approximate BOOLEAN NOT NULL,
        PRIMARY KEY (comparison_id, author, idx)
    );
    """,
    # 6: decoding-method runs, what the method did per answer token, every drafted token
    """
    CREATE TABLE decoding_runs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        prompt VARCHAR NOT NULL,
        method VARCHAR NOT NULL,
        params JSON NOT NULL,
        timings JSON NOT NULL,
        stop_reason VARCHAR NOT NULL,
        method_generation_id VARCHAR NOT NULL,
        greedy_generation_id VARCHAR NOT NULL,
        greedy JSON NOT NULL,
        second_label VARCHAR,
        batch_id VARCHAR
    );
    CREATE TABLE decoding_tokens (
        run_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        token_id INTEGER NOT NULL,
        kind VARCHAR,
        round INTEGER,
        greedy_id INTEGER,
        p_a DOUBLE,
        p_b DOUBLE,
        score DOUBLE,
        rank_a INTEGER,
        js DOUBLE,
        plausible INTEGER,
        constraint_changed BOOLEAN,
        layer INTEGER,
        top_a JSON,
        top_b JSON,
        top_score JSON,
        PRIMARY KEY (run_id, idx)
    );
    CREATE TABLE decoding_drafts (
        run_id VARCHAR NOT NULL,
        round INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        token_id INTEGER NOT NULL,
        q DOUBLE NOT NULL,
        p DOUBLE,
        accepted BOOLEAN NOT NULL,
        verified BOOLEAN NOT NULL,
        text VARCHAR NOT NULL,
        PRIMARY KEY (run_id, round, slot)
    );
    """,
    # 7: trait vectors (the tensors are safetensors files under <home>/vectors)
    """
    CREATE TABLE trait_vectors (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        trait VARCHAR NOT NULL,
        model_label VARCHAR NOT NULL,
        variant VARCHAR NOT NULL,
        layers INTEGER NOT NULL,
        hidden INTEGER NOT NULL,
        default_layer INTEGER NOT NULL,
        norms JSON NOT NULL,
        auroc JSON NOT NULL,
        meta JSON NOT NULL,
        file VARCHAR NOT NULL
    );
    """,
    # 8: monitored answers (the per-token trait-monitor format, with their generation)
    """
    CREATE TABLE trait_runs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        kind VARCHAR NOT NULL,
        pair_id VARCHAR,
        generation_id VARCHAR,
        record JSON NOT NULL,
        trait_layers JSON NOT NULL,
        steering JSON NOT NULL
    );
    """,
    # 9: batches of prompts or transcripts, their items with statistics and flag counts
    """
    CREATE TABLE batches (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        model_label VARCHAR NOT NULL,
        settings JSON NOT NULL,
        malformed JSON NOT NULL,
        n_malformed INTEGER NOT NULL
    );
    CREATE TABLE batch_items (
        batch_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        line INTEGER NOT NULL,
        messages JSON NOT NULL,
        prompt VARCHAR NOT NULL,
        reference VARCHAR,
        status VARCHAR NOT NULL,
        error VARCHAR,
        generation_id VARCHAR,
        finished_at TIMESTAMPTZ,
        answer VARCHAR,
        n_tokens INTEGER,
        mean_prob DOUBLE,
        min_prob DOUBLE,
        mean_entropy DOUBLE,
        max_entropy DOUBLE,
        perplexity DOUBLE,
        low_confidence INTEGER,
        entropy_spikes INTEGER,
        hallucination_spans INTEGER,
        answer_mismatch BOOLEAN,
        flagged JSON,
        PRIMARY KEY (batch_id, idx)
    );
    """,
    # 10: the batch flags "refusal at the first token" and "divergence from a second model"
    """
    ALTER TABLE batch_items ADD COLUMN refusal_prob DOUBLE;
    ALTER TABLE batch_items ADD COLUMN divergence DOUBLE;
    """,
    # 11: owners (hosted servers; NULL on a local install) and revocable share links
    """
    ALTER TABLE sessions ADD COLUMN owner VARCHAR;
    ALTER TABLE calibration_datasets ADD COLUMN owner VARCHAR;
    ALTER TABLE calibration_runs ADD COLUMN owner VARCHAR;
    CREATE TABLE share_links (
        token VARCHAR PRIMARY KEY,
        session_id VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        revoked_at TIMESTAMPTZ
    );
    """,
    # 12: runs over many items (`jobs`): each item's input, status and result
    """
    CREATE TABLE jobs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        kind VARCHAR NOT NULL,
        label VARCHAR NOT NULL,
        settings JSON NOT NULL,
        total INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE job_items (
        job_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        item JSON NOT NULL,
        status VARCHAR NOT NULL,
        result JSON,
        error VARCHAR,
        seconds DOUBLE,
        tokens INTEGER,
        PRIMARY KEY (job_id, idx)
    );
    """,
    # 13: the batch flag "repetition" (seq-rep-n of the answer's tokens)
    """
    ALTER TABLE batch_items ADD COLUMN repetition DOUBLE;
    """,
    # 14: a batch is listed once all its items are read (a killed read leaves one unlisted)
    """
    ALTER TABLE batches ADD COLUMN ingested BOOLEAN DEFAULT TRUE;
    """,
]


def current_version(cur: duckdb.DuckDBPyConnection) -> int:
    """Return the highest version in `schema_version`, 0 for a blank database."""
    return cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]
