-- The hub store's tables as the version before monthly partitions and the at column made them (PostgreSQL,
-- pg_dump --schema-only of a new store): tests/hub/test_hub_partitions.py migrates a store of this shape.
CREATE TABLE public.aggregates (
    gateway_id text NOT NULL,
    batch_seq bigint NOT NULL,
    device_id text NOT NULL,
    name text NOT NULL,
    unit text,
    window_start bigint NOT NULL,
    window_end bigint NOT NULL,
    count bigint NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    mean double precision NOT NULL,
    stdev double precision NOT NULL,
    last double precision NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    store_id text DEFAULT ''::text NOT NULL
);
CREATE TABLE public.batches (
    gateway_id text NOT NULL,
    seq bigint NOT NULL,
    created bigint NOT NULL,
    received_at double precision NOT NULL,
    mode text NOT NULL,
    size bigint NOT NULL,
    root bytea NOT NULL,
    cose bytea NOT NULL,
    refused text DEFAULT '[]'::text NOT NULL,
    store_id text DEFAULT ''::text NOT NULL
);
CREATE TABLE public.epochs (
    gateway_id text NOT NULL,
    number bigint NOT NULL,
    first_batch bigint NOT NULL,
    last_batch bigint NOT NULL,
    size bigint NOT NULL,
    root bytea NOT NULL,
    heads bytea NOT NULL,
    receipt text NOT NULL,
    cose bytea NOT NULL,
    store_id text DEFAULT ''::text NOT NULL
);
CREATE TABLE public.gateway_status (
    gateway_id text NOT NULL,
    last_batch_at double precision,
    received_at double precision,
    store_id text,
    seq bigint,
    sent_at bigint,
    state text,
    devices text,
    cose bytea
);
CREATE TABLE public.key_bounds (
    signer text NOT NULL,
    key_id text NOT NULL,
    valid_below_seq bigint NOT NULL
);
CREATE TABLE public.measurements (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    name text NOT NULL,
    pos bigint NOT NULL,
    unit text,
    value double precision,
    value_text text NOT NULL
);
CREATE TABLE public.readings (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    "time" double precision,
    gateway_id text NOT NULL,
    batch_seq bigint NOT NULL,
    leaf bigint NOT NULL,
    message bytea NOT NULL,
    key_id text,
    flag text,
    store_id text DEFAULT ''::text NOT NULL
);
CREATE TABLE public.rejected (
    id bigint NOT NULL,
    received_at double precision NOT NULL,
    topic text NOT NULL,
    gateway_id text,
    code text NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL,
    sha256 bytea,
    size bigint,
    device_id text,
    seq bigint,
    batch_seq bigint,
    leaf bigint,
    store_id text
);
ALTER TABLE public.rejected ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.rejected_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.waiting_for_gateway (
    id bigint NOT NULL,
    received_at double precision NOT NULL,
    topic text NOT NULL,
    gateway_id text NOT NULL,
    payload bytea NOT NULL,
    sha256 bytea NOT NULL
);
ALTER TABLE public.waiting_for_gateway ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.waiting_for_gateway_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
ALTER TABLE ONLY public.aggregates
    ADD CONSTRAINT aggregates_pkey PRIMARY KEY (gateway_id, store_id, batch_seq, device_id, name, window_start);
ALTER TABLE ONLY public.batches
    ADD CONSTRAINT batches_pkey PRIMARY KEY (gateway_id, store_id, seq);
ALTER TABLE ONLY public.epochs
    ADD CONSTRAINT epochs_pkey PRIMARY KEY (gateway_id, store_id, number);
ALTER TABLE ONLY public.gateway_status
    ADD CONSTRAINT gateway_status_pkey PRIMARY KEY (gateway_id);
ALTER TABLE ONLY public.key_bounds
    ADD CONSTRAINT key_bounds_pkey PRIMARY KEY (signer, key_id);
ALTER TABLE ONLY public.measurements
    ADD CONSTRAINT measurements_pkey PRIMARY KEY (device_id, seq, name);
ALTER TABLE ONLY public.readings
    ADD CONSTRAINT readings_pkey PRIMARY KEY (device_id, seq);
ALTER TABLE ONLY public.rejected
    ADD CONSTRAINT rejected_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.waiting_for_gateway
    ADD CONSTRAINT waiting_for_gateway_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.waiting_for_gateway
    ADD CONSTRAINT waiting_for_gateway_sha256_key UNIQUE (sha256);
CREATE INDEX readings_time ON public.readings USING btree ("time");
