// The CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz), embedded verbatim so the
// library needs no data files at run time. CLIPKIT_BPE_VOCAB_PATH is set by CMake.
    .section .rodata
    .global clipkit_bpe_vocab_gz
    .global clipkit_bpe_vocab_gz_end
    .balign 16
clipkit_bpe_vocab_gz:
    .incbin CLIPKIT_BPE_VOCAB_PATH
clipkit_bpe_vocab_gz_end:
    .byte 0
    .section .note.GNU-stack,"",@progbits
