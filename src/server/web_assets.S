// The web page of `clipkit serve` (web/*), embedded verbatim so that the server needs no files
// besides the index and the model. CMake passes the web/ folder to the assembler (-Wa,-I).
#define ASSET(sym, file) \
    .global sym;         \
    .global sym##_end;   \
    .balign 16;          \
sym:                     \
    .incbin file;        \
sym##_end:               \
    .byte 0

    .section .rodata
    ASSET(clipkit_web_index_html, "index.html")
    ASSET(clipkit_web_app_js, "app.js")
    ASSET(clipkit_web_style_css, "style.css")
    .section .note.GNU-stack,"",@progbits
