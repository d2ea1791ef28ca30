package proc

// Samples captured on this project's machine (Linux 6.18, amd64).

const fdinfoEventfd = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t26\neventfd-count:                5\neventfd-id: 2\neventfd-semaphore: 1\n"

const fdinfoTimerfd = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t26\nclockid: 1\nticks: 0\nsettime flags: 00\nit_value: (99, 999982071)\nit_interval: (1, 500)\n"

const fdinfoSignalfd = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t26\nsigmask:\t0000000000000a00\n"

const fdinfoInotify = "pos:\t0\nflags:\t02000000\nmnt_id:\t17\nino:\t26\ninotify wd:1 ino:3c4a3 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000\n"

const fdinfoFanotify = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t26\nfanotify flags:1 event-flags:8000\nfanotify ino:3c4a3 sdev:fe00000 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000\n"

const fdinfoEpoll = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t26\ntfd:        6 events:       19 data:                6  pos:0 ino:1a sdev:10\ntfd:        5 events: 80000019 data:        700000005  pos:0 ino:1a sdev:10\n"

const fdinfoPidfd = "pos:\t0\nflags:\t02000002\nmnt_id:\t4\nino:\t3782\nPid:\t3781\nNSpid:\t3781\n"

const fdinfoUffd = "pos:\t0\nflags:\t02000000\nmnt_id:\t17\nino:\t8005\npending:\t0\ntotal:\t0\nAPI:\taa:0:80000000000001ff\n"

const fdinfoPipe = "pos:\t0\nflags:\t02004000\nmnt_id:\t16\nino:\t8000\n"

const timersSample = "ID: 2\nsignal: 0/0000000000000000\nnotify: none/pid.4193\nClockID: 7\nID: 1\nsignal: 14/0000000000001234\nnotify: signal/pid.4193\nClockID: 0\nID: 0\nsignal: 10/00000000deadbeef\nnotify: signal/tid.4193\nClockID: 1\n"

const netUDPSample = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n12471: 0100007F:B3EA 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7995 2 00000000aee1c165 0          \n"

const netUDP6Sample = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n 1234: 00000000000000000000000001000000:9C40 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 8123 2 0000000000000000 0\n"

// statTricky has a comm with spaces and parentheses.
const statTricky = "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 3 0 12345 1234567 89 18446744073709551615 4194304 4200000 140730000000000 0 0 0 0 0 0 1 0 0 17 1 0 0 0 0 0 4210000 4220000 4230000 140730000001000 140730000001010 140730000001010 140730000002000 0\n"
