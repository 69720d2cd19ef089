"""The overview's chart of orders and revenue per day, as coordinates for an inline SVG drawn
by the template: no script, no chart library, readable at any width (it scales)."""
from datetime import datetime, timezone

WIDTH, HEIGHT, PAD = 600, 160, 20


def bars(days) -> dict:
    """`days`: (day start, orders, revenue). Bars for orders, a polyline for revenue."""
    slot = WIDTH / max(1, len(days))
    most_orders = max((count for _, count, _ in days), default=0) or 1
    most_revenue = max((revenue for _, _, revenue in days), default=0) or 1
    drawn, points = [], []
    for index, (start, count, revenue) in enumerate(days):
        height = (HEIGHT - PAD) * count / most_orders
        x = index * slot
        drawn.append({"x": round(x + 1, 1), "y": round(HEIGHT - height, 1),
                      "width": round(max(1.0, slot - 2), 1), "height": round(height, 1),
                      "label": datetime.fromtimestamp(start, timezone.utc).strftime("%m-%d"),
                      "orders": count, "revenue": revenue})
        y = HEIGHT - (HEIGHT - PAD) * revenue / most_revenue
        points.append(f"{x + slot / 2:.1f},{y:.1f}")
    return {"width": WIDTH, "height": HEIGHT, "bars": drawn, "line": " ".join(points),
            "most_orders": max((count for _, count, _ in days), default=0)}
