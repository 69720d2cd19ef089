<?php
// php call.php METHOD '[ARGS as a JSON list]': one call of class Api against SERVA_URL with
// SERVA_KEY, as a panel script makes it; prints {"result": what the method returned} as JSON
// (objects stay objects, numbers stay numbers), or {"type_error": …} when PHP refuses the
// argument (refill(int $orderId) given "ORD-100016").
require __DIR__ . '/Api.php';

$api = new Api();
$api->api_url = getenv('SERVA_URL');
$api->api_key = getenv('SERVA_KEY');
$args = json_decode($argv[2] ?? '[]', true);
try {
    $result = $api->{$argv[1]}(...$args);
    echo json_encode(['result' => $result], JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION);
} catch (TypeError $error) {
    echo json_encode(['type_error' => $error->getMessage()]);
}
