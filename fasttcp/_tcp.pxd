# TCP header flag bits, named as BSD's netinet/tcp.h names them (fasttcp.models re-exports them
# as FIN, SYN, ... through the engine's module constants of the same names).
cdef enum:
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_PUSH = 0x08
    TH_ACK = 0x10
    TH_URG = 0x20
    TH_ECE = 0x40
    TH_CWR = 0x80
