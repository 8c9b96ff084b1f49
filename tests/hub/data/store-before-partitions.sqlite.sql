-- The hub store's tables as the version before the at column made them (SQLite, its sqlite_master):
-- tests/hub/test_hub_partitions.py migrates a store of this shape.
CREATE TABLE readings (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL,                        
    gateway_id TEXT NOT NULL,
    batch_seq INTEGER NOT NULL,
    leaf INTEGER NOT NULL,                
    message BLOB NOT NULL, key_id TEXT, flag TEXT, store_id TEXT NOT NULL DEFAULT '',            
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE measurements (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    pos INTEGER NOT NULL,                 
    unit TEXT,
    value REAL,                       
    value_text TEXT NOT NULL,           
    PRIMARY KEY (device_id, seq, name)
);
CREATE TABLE rejected (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    gateway_id TEXT,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL             
, sha256 BLOB, size INTEGER, device_id TEXT, seq INTEGER, batch_seq INTEGER, leaf INTEGER, store_id TEXT);
CREATE INDEX readings_time ON readings (time);
CREATE TABLE waiting_for_gateway (  
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    gateway_id TEXT NOT NULL,           
    payload BLOB NOT NULL,            
    sha256 BLOB NOT NULL UNIQUE       
);
CREATE TABLE key_bounds (  
    signer TEXT NOT NULL,               
    key_id TEXT NOT NULL,               
    valid_below_seq INTEGER NOT NULL,     
    PRIMARY KEY (signer, key_id)
);
CREATE TABLE "batches" (
    gateway_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created INTEGER NOT NULL,             
    received_at REAL NOT NULL,
    mode TEXT NOT NULL,                 
    size INTEGER NOT NULL,
    root BLOB NOT NULL,               
    cose BLOB NOT NULL, refused TEXT NOT NULL DEFAULT '[]', store_id TEXT NOT NULL DEFAULT '',               
    PRIMARY KEY (gateway_id, store_id, seq)       
);
CREATE TABLE "aggregates" (
    gateway_id TEXT NOT NULL,
    batch_seq INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    unit TEXT,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    count INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    mean REAL NOT NULL,
    stdev REAL NOT NULL,
    last REAL NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL, store_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (gateway_id, store_id, batch_seq, device_id, name, window_start)
);
CREATE TABLE "epochs" (
    gateway_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    first_batch INTEGER NOT NULL,
    last_batch INTEGER NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,               
    heads BLOB NOT NULL,              
    receipt TEXT NOT NULL,              
    cose BLOB NOT NULL, store_id TEXT NOT NULL DEFAULT '',               
    PRIMARY KEY (gateway_id, store_id, number)
);
CREATE TABLE gateway_status (
    gateway_id TEXT PRIMARY KEY,
    last_batch_at REAL,               
    received_at REAL,                 
    store_id TEXT,                      
    seq INTEGER,                          
    sent_at INTEGER,                      
    state TEXT,                         
    devices TEXT,                       
    cose BLOB                         
);
