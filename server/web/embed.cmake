# Writes OUTPUT, a C++ source defining sinkserve::kWebIndexHtml with the
# bytes of INPUT (the web chat page) as a raw string literal.
file(READ ${INPUT} page)
string(FIND "${page}" ")sinkserve_page\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )sinkserve_page\"")
endif()
file(WRITE ${OUTPUT} "// Generated from server/web/index.html by server/web/embed.cmake.\nnamespace sinkserve {\nextern const char kWebIndexHtml[];\nconst char kWebIndexHtml[] = R\"sinkserve_page(${page})sinkserve_page\";\n}  // namespace sinkserve\n")
