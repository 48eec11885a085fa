// Fetch the first user and show it under the heading: one API call, one static asset.
fetch("/users/1")
  .then((response) => response.json())
  .then((user) => {
    const p = document.createElement("p");
    p.textContent = `User 1 is ${user.firstName} ${user.lastName} of ${user.address.city}.`;
    document.body.appendChild(p);
  });
